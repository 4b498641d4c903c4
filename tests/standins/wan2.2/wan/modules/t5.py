"""wan.modules.t5 stand-in: upstream evaluates torch.cuda.current_device() as a default argument
(wan/modules/t5.py, T5EncoderModel), so `import wan` is the first thing that needs a GPU."""
import torch


class T5EncoderModel:
    def __init__(self, text_len, dtype=torch.bfloat16, device=torch.cuda.current_device(), checkpoint_path=None):
        self.text_len, self.dtype, self.device = text_len, dtype, device
