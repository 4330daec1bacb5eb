"""Small random Qwen3 checkpoints written by transformers itself (test fixtures)."""

from __future__ import annotations

from pathlib import Path


def make_hf_checkpoint(path: Path, *, vocab_size=512, hidden_size=64, intermediate_size=96,
                       num_layers=2, num_heads=4, num_kv_heads=2, head_dim=24,
                       rope_theta=1_000_000.0, tie_word_embeddings=False,
                       max_position_embeddings=4096, seed=0, dtype="float32"):
    """Save a random `Qwen3ForCausalLM` with transformers; return the torch model."""
    import torch
    import transformers

    cfg = transformers.Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    # Default init leaves norms at 1: randomise them so a swapped norm is caught.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return model
