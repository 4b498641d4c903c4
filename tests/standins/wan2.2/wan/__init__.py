"""Stand-in for Wan2.2's `wan` package (42bf4cf) in the GPU image's tests: no model code, but the
same import order as upstream up to the first thing that needs a GPU (wan/modules/t5.py), and the
same kind of imports on the way (easydict, diffusers, torch), so the image's packages and its
need for a GPU meet the stand-in where they meet upstream."""
from . import configs, modules
