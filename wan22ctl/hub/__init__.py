"""Hub adapter: huggingface_hub (and optionally modelscope) downloads, sizes, verification."""
