"""mmi-ray: mutual-information chain-of-thought distillation with Ray Train and Ray Tune sweeps."""

import os

# MKL splits a matrix product's inner dimension across threads on Intel CPUs (weight gradients,
# where it runs over batch x length), so without its strict reproducibility mode a run's floats
# depend on the thread count there (not on AMD, where MKL runs another code path). MKL reads this
# once, at its first call: it is set here, before anything of mmi_ray can multiply a matrix. A
# value the user set is kept (machine.describe records it). See docs/reproducibility.md.
MKL_REPRODUCIBLE = "AUTO,STRICT"
os.environ.setdefault("MKL_CBWR", MKL_REPRODUCIBLE)
