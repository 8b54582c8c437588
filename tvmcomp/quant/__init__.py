"""Quantization: schemes (what to quantize, how), observers (ranges from calibration data),
and the Relax passes that annotate and realize integer compute."""
