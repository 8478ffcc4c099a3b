"""A tiny, randomly initialised Llama with a tiny BPE tokenizer, made on the spot (no download).

Small enough that a whole loop round runs in seconds on CPU, real enough that every code path
(transformers generate, chat templates, safetensors save/load, peft) is the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. Instruction Response Judgment",
    "The response is incorrect. The response repeats the sentence four times.",
    "Write a short poem about the sea. Name three colors. Explain photosynthesis in one sentence.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}#-_/\\\n",
]


def make_tiny_model(
    out_dir: Path, seed: int = 0, vocab_size: int = 384, head_dim: int | None = None
) -> Path:
    """`head_dim` defaults to hidden_size / heads = 8; vLLM's CPU attention kernels need at
    least 32 (tests/engines passes 32)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(head_dim=head_dim, tie_word_embeddings=True, **tiny_llama_shape(tokenizer))
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir


def tiny_llama_shape(tokenizer: Any) -> dict[str, Any]:
    """The tiny Llama's size and special tokens (LlamaConfig keyword arguments), shared by the
    test models built on it (causal LM, reward models)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
