"""Graph passes on Relax IRModules (each module: one rewrite, one public function)."""
