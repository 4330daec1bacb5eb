"""Qwen3's special token ids, in a module without JAX (config files read them)."""

IM_END_ID = 151645  # <|im_end|>: the end of a chat turn
ENDOFTEXT_ID = 151643  # <|endoftext|>: the end of a document, also Qwen3's pad id
QWEN3_END_TOKEN_IDS = (IM_END_ID, ENDOFTEXT_ID)
QWEN3_PAD_ID = ENDOFTEXT_ID
