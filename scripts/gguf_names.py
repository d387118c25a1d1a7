"""llama.cpp's GGUF tensor names for Llama and Mixtral, and their Hugging
Face names: what gguf_check.py and gguf_dequant.py both translate. No
gguf-py import here, so either script can use it before gguf is needed.
"""

# Per decoder layer: blk.N.<key> -> model.layers.N.<value>.
LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate_inp.weight": "block_sparse_moe.gate.weight",
}
# Stacked Mixtral experts: blk.N.<key>[e] -> ...experts.e.<value>.weight.
EXPERTS = {"ffn_gate_exps.weight": "w1", "ffn_down_exps.weight": "w2", "ffn_up_exps.weight": "w3"}
# Outside the layers.
TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def field(reader, key):
    """A metadata value of a gguf.GGUFReader, or None when absent."""
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()
