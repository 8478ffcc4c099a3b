"""A tiny Llama whose weights are set by hand so that greedy decoding after a chat prompt always
writes one fixed answer, then end-of-sequence: a real transformers model (real generate, chat
template, padding, safetensors) with a known output, for testing a local LLM judge's success
path without downloading a model.

How: every attention and MLP block writes zero into the residual stream (o_proj and down_proj
are zero), so the logits at a position depend only on that position's token: a bigram model.
The token ending the chat prompt and each answer token get their own one-hot embedding
direction, and the untied LM head maps each direction to the next answer token (then to EOS).
So every token of the chain must be distinct (checked).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.tiny_model import make_tiny_model


def make_scripted_model(out_dir: Path, answer: str, head_dim: int | None = None) -> Path:
    """Save, in `out_dir`, a tiny model that answers any chat prompt with exactly `answer`
    (`head_dim` 32 makes one vLLM's CPU kernels run; it does not change the answer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(make_tiny_model(out_dir))  # the tokenizer (and a random model, replaced)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    trigger = tokenizer(prompt, add_special_tokens=False).input_ids[-1]
    chain = [trigger, *tokenizer(answer, add_special_tokens=False).input_ids]
    if len(set(chain)) != len(chain):
        raise ValueError(f"{answer!r}: its tokens (and the prompt's last) must all differ")
    hidden = 32
    if len(chain) > hidden:
        raise ValueError(f"{answer!r} is too long for a {hidden}-dimensional bigram chain")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        embed = model.model.embed_tokens.weight
        following = [*chain[1:], tokenizer.eos_token_id]
        for k, (token, nxt) in enumerate(zip(chain, following, strict=True)):
            embed[token] = 0.0
            embed[token, k] = 1.0
            model.lm_head.weight[nxt, k] = 10.0
    model.save_pretrained(out_dir)
    return out_dir
