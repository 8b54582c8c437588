"""Graph passes on Relax IRModules (each module: one rewrite, one public function)."""


def rewrite_each_function(mod, rewrite):
    """``mod`` with ``rewrite`` (a Relax function to a Relax function) applied to each of its Relax
    functions, then the bindings nothing reads any more removed."""
    from tvm import relax

    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gvar] = rewrite(func)
    return relax.transform.DeadCodeElimination()(mod)
