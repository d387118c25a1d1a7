package policy

import (
	"regexp"
	"strings"
)

// Component is the role a tensor plays in the model. It groups tensors in
// size breakdowns and precision maps.
type Component string

const (
	Experts    Component = "experts"
	Router     Component = "router"
	Attention  Component = "attention"
	MLP        Component = "mlp"
	Embeddings Component = "embeddings"
	Head       Component = "head"
	Norm       Component = "norm"
	Other      Component = "other"
)

// Components lists every component in display order.
var Components = []Component{Experts, Router, Attention, MLP, Embeddings, Head, Norm, Other}

var (
	reExperts    = regexp.MustCompile(`(^|\.)(experts|shared_experts?)\.|block_sparse_moe\.experts`)
	reRouter     = regexp.MustCompile(`(block_sparse_moe|mlp|moe)\.(gate|router)\.weight$|\.router\.`)
	reHead       = regexp.MustCompile(`(^|\.)lm_head\.|^output\.|(^|\.)embed_out\.`)
	reEmbeddings = regexp.MustCompile(`embed_tokens|(^|\.)wte\.|(^|\.)wpe\.|tok_embeddings|word_embeddings`)
	reAttention  = regexp.MustCompile(`bk_core|self_attn\.|(^|\.)attention\.|(^|\.)attn\.|\.(q|k|v|o)_proj\.|\.w[qkvo]\.`)
	reMLP        = regexp.MustCompile(`(^|\.)mlp\.|feed_forward\.|(gate|up|down)_proj\.|\.w[123]\.`)
	reNorm       = regexp.MustCompile(`norm|ln_\w*\.`)
)

// Classify returns the component of a tensor from its name alone, following
// the Hugging Face Llama, Mixtral, Qwen-MoE and DeepSeek conventions and the
// llama2.c / GPT-2 spellings.
func Classify(name string) Component {
	n := strings.ToLower(name)
	switch {
	case reExperts.MatchString(n):
		return Experts
	case reRouter.MatchString(n):
		return Router
	case reHead.MatchString(n):
		return Head
	case reEmbeddings.MatchString(n):
		return Embeddings
	case reNorm.MatchString(n):
		return Norm
	case reAttention.MatchString(n):
		return Attention
	case reMLP.MatchString(n):
		return MLP
	}
	return Other
}

// reTokenEmbed matches the token embedding (not position embeddings).
var reTokenEmbed = regexp.MustCompile(`embed_tokens|(^|\.)wte\.|tok_embeddings|word_embeddings`)
