"""wan.configs stand-in: upstream builds its configs on easydict and sets this at import."""
import os

from easydict import EasyDict

os.environ['TOKENIZERS_PARALLELISM'] = 'false'
shared = EasyDict(t5_dtype="bf16", text_len=512)
