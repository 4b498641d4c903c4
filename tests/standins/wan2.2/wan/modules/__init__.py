from .attention import flash_attention
from .model import WanModel
from .t5 import T5EncoderModel

__all__ = ['WanModel', 'T5EncoderModel', 'flash_attention']
