"""Sampler / server config: `int-jax serve --config=configs/sampler.py:<preset>`.

`sampler` holds the engine settings every stage's `config.sampler` also uses
(see `JetStreamSampler.from_config`); `serve` holds the gRPC server's. Buckets
are powers of two from `min_bucket` to `max_prefill_length` unless `buckets`
lists them; each bucket compiles one prefill, so they bound compilations.
Decode steps attend over a window of the cache covering the longest live
sequence: powers of two from `min_decode_bucket` up to `max_len` unless
`decode_buckets` lists them; each compiles one decode step.
"""

from ml_collections import ConfigDict

from int_jax.model_config import model_config


def get_config(arg: str = "tiny"):
    tiny = arg == "tiny"
    c = ConfigDict()
    c.model = model_config(arg)
    c.sampler = ConfigDict(dict(
        slots=8 if tiny else 64,  # concurrent decode rows of the KV cache
        max_len=1024 if tiny else 20480,  # cache rows per slot: prompt + new tokens
        buckets=None,  # explicit prefill buckets; None: powers of two below
        min_bucket=16 if tiny else 128,
        max_prefill_length=512 if tiny else 4096,  # largest bucket; longer prompts are errors
        decode_buckets=None,  # explicit decode attention windows; None: powers of two below
        min_decode_bucket=256,  # smallest window; max_len is always the largest
        cache_dtype="float32" if tiny else "bfloat16",
        stop_ids=(151645, 151643),  # <|im_end|>, <|endoftext|>
        pad_id=151643,
        max_top_k=64,  # top_k up to this uses lax.top_k; larger sorts the vocabulary
        prefix_cache_entries=4,  # prompts whose KV is kept for reuse (n samples, continuations)
        progress=True,
        stall_timeout_s=1800.0,  # no request finishing for this long is an error
        use_tokenizer=True,
        # The sampler's weight layout: overrides on top of model.rules. Default: `embed`
        # unsplit, so every fsdp device keeps whole weights (split over `tensor` only)
        # and a decode step all-gathers no weight shards. Memory: params / tensor per
        # device instead of params / (fsdp * tensor), beside the trainer's copy when
        # both live on the same devices (GRPO). () keeps the trainer's fsdp layout.
        rules=(("embed", None),),
    ))
    c.serve = ConfigDict(dict(
        host="127.0.0.1",  # loopback by default; "::" or "0.0.0.0" to expose
        port=9000,
        threads=16,  # gRPC handler threads
        max_new_tokens=256 if tiny else 16384,  # when a request sets max_tokens=0
        temperature=0.0,  # the server's sampling settings (gRPC requests carry none)
        top_p=1.0,
        top_k=0,
        seed=0,
        output_dir="",  # where to write the resolved config; "" = none
    ))
    return c
