// Package tokenizer reads a Hugging Face checkpoint's tokenizer files into
// the vocabulary description that GGUF carries (tokens, scores, token
// types, BPE merges, special token ids, chat template), without running a
// tokenizer.
//
// Sources, in the order llama.cpp's convert_hf_to_gguf.py tries them:
// tokenizer.model (a SentencePiece ModelProto, parsed by hand: only the
// pieces and a few trainer fields are needed, so no generated protobuf code
// is pulled in), then tokenizer.json (a BPE model; byte_fallback BPE as in
// Llama 2 and Mistral becomes the SentencePiece-style "llama" vocabulary,
// byte-level BPE as in Llama 3 the "gpt2" one with its merges and a
// pre-tokenizer name recognised from the split regex). Special token ids
// come from tokenizer_config.json (token strings), then config.json, then
// generation_config.json; add_bos_token / add_eos_token and the chat
// template from tokenizer_config.json (or chat_template.jinja /
// chat_template.json).
//
// A directory with neither tokenizer file gives ErrNoTokenizer; a file
// that cannot be parsed gives an error marked with quant.ErrInput that
// names it.
package tokenizer
