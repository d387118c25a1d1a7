#!/usr/bin/env python3
"""byte_vocab.py OUT.gguf: a vocabulary-only GGUF written with gguf-py, for
`mixq export --vocab-from` on the synthetic 256-token models: <unk> <s> </s>
and the byte pieces <0x00>..<0xFC> of a SentencePiece "llama" vocabulary,
enough for llama.cpp to tokenize ASCII text (by bytes)."""
import sys

from gguf import GGUFWriter

w = GGUFWriter(sys.argv[1], "llama")
tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(253)]
w.add_tokenizer_model("llama")
w.add_tokenizer_pre("default")
w.add_token_list(tokens)
w.add_token_scores([0.0] * len(tokens))
w.add_token_types([2, 3, 3] + [6] * 253)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
