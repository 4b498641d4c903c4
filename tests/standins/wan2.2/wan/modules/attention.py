"""wan.modules.attention stand-in: upstream's flash-attn probes and the function the kit replaces."""
try:
    import flash_attn_interface  # noqa: F401
    FLASH_ATTN_3_AVAILABLE = True
except ModuleNotFoundError:
    FLASH_ATTN_3_AVAILABLE = False

try:
    import flash_attn  # noqa: F401
    FLASH_ATTN_2_AVAILABLE = True
except ModuleNotFoundError:
    FLASH_ATTN_2_AVAILABLE = False


def flash_attention(q, k, v, *args, **kwargs):
    raise AssertionError("upstream flash_attention reached: the kit's backend was not installed")
