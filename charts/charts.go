package charts

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"math"
	"regexp"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/qformat"
)

// reLayer splits "model.layers.3.self_attn.q_proj.weight" into 3 and
// "self_attn.q_proj".
var reLayer = regexp.MustCompile(`layers\.(\d+)\.(.+?)(\.weight)?$`)

// position places a tensor on the layer axis: its layer index, or -1 for
// tensors before the first layer (embeddings) and nLayers for those after it
// (head, final norm), judged by their position in the checkpoint order.
type position struct {
	layer int
	part  string
}

func positions(r *importance.Report) (map[string]position, int) {
	pos := map[string]position{}
	nLayers := 0
	seenLayer := false
	for _, t := range r.Tensors {
		if m := reLayer.FindStringSubmatch(t.Name); m != nil {
			l, _ := strconv.Atoi(m[1])
			pos[t.Name] = position{l, m[2]}
			nLayers = max(nLayers, l+1)
			seenLayer = true
			continue
		}
		if seenLayer {
			pos[t.Name] = position{-2, t.Name} // after the layers; fixed below
		} else {
			pos[t.Name] = position{-1, t.Name}
		}
	}
	for n, p := range pos {
		if p.layer == -2 {
			pos[n] = position{nLayers, p.part}
		}
	}
	return pos, nLayers
}

// palette of the precisions, narrowest to widest.
var precisionColors = map[string]color.Color{
	"int4": color.RGBA{0xd6, 0x27, 0x28, 0xff},
	"int8": color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	"f16":  color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	"f32":  color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	"keep": color.RGBA{0x99, 0x99, 0x99, 0xff},
}

var precisionOrder = []string{"int4", "int8", "f16", "f32", qformat.Keep}

// colorBox is a legend entry drawn as a filled square.
type colorBox struct{ c color.Color }

func (b colorBox) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(b.c, c.ClipPolygonXY([]vg.Point{
		{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y},
		{X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y},
	}))
}

// ErrNoMatrices is returned for a report without any matrix: there is
// nothing to draw.
var ErrNoMatrices = errors.New("the report has no matrices to draw")

// Chart is a rendered PNG.
type Chart struct {
	Name string
	PNG  []byte
}

// render draws a plot to PNG bytes.
func render(p *plot.Plot, w, h vg.Length) ([]byte, error) {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Importance plots each matrix's combined score against its layer, one
// series per component.
func Importance(r *importance.Report) ([]byte, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Importance per layer (%s policy)", r.Policy)
	p.X.Label.Text = "layer (−1: embeddings, last: head)"
	p.Y.Label.Text = "combined score"
	pos, _ := positions(r)
	series := map[string]plotter.XYs{}
	for _, t := range r.Tensors {
		if !t.Matrix {
			continue
		}
		c := string(t.Component)
		series[c] = append(series[c], plotter.XY{X: float64(pos[t.Name].layer), Y: t.Score})
	}
	if len(series) == 0 {
		return nil, ErrNoMatrices
	}
	names := sortedKeys(series)
	for i, c := range names {
		s, err := plotter.NewScatter(series[c])
		if err != nil {
			return nil, err
		}
		s.GlyphStyle.Color = plotColor(i)
		s.GlyphStyle.Radius = vg.Points(3)
		s.GlyphStyle.Shape = draw.CircleGlyph{}
		p.Add(s)
		p.Legend.Add(c, s)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return render(p, 8*vg.Inch, 5*vg.Inch)
}

// grid is a layer × part table of precisions for the heat map.
type grid struct {
	cols, rows int
	z          []float64
}

func (g grid) Dims() (int, int)   { return g.cols, g.rows }
func (g grid) Z(c, r int) float64 { return g.z[r*g.cols+c] }
func (g grid) X(c int) float64    { return float64(c - 1) }
func (g grid) Y(r int) float64    { return float64(r) }

type discrete []color.Color

func (d discrete) Colors() []color.Color { return d }

// PrecisionMap draws the chosen precision of every matrix as a layer ×
// component grid; embeddings and head sit in the first row, in the columns
// before and after the layers.
func PrecisionMap(r *importance.Report) ([]byte, error) {
	pos, nLayers := positions(r)
	// Rows: one per component inside the layers (sorted), then one per
	// matrix outside them (embeddings, head) under its own name.
	partSet := map[string]bool{}
	var outside []string
	for _, t := range r.Tensors {
		if !t.Matrix {
			continue
		}
		if pp := pos[t.Name]; pp.layer >= 0 && pp.layer < nLayers {
			partSet[pp.part] = true
		} else {
			outside = append(outside, t.Name)
		}
	}
	parts := append(sortedKeys(partSet), outside...)
	if len(parts) == 0 {
		return nil, ErrNoMatrices
	}
	row := map[string]int{}
	for i, p := range parts {
		row[p] = i
	}
	// Columns: −1 (before the layers), 0..nLayers−1, nLayers (after).
	g := grid{cols: nLayers + 2, rows: len(parts), z: make([]float64, (nLayers+2)*len(parts))}
	for i := range g.z {
		g.z[i] = math.NaN()
	}
	code := map[string]float64{}
	for i, p := range precisionOrder {
		code[p] = float64(i)
	}
	for _, t := range r.Tensors {
		if !t.Matrix {
			continue
		}
		pp := pos[t.Name]
		rIdx, ok := row[pp.part]
		if !ok {
			rIdx = row[t.Name]
		}
		g.z[rIdx*g.cols+pp.layer+1] = code[t.Precision]
	}
	var cols discrete
	for _, p := range precisionOrder {
		cols = append(cols, precisionColors[p])
	}
	h := plotter.NewHeatMap(g, cols)
	h.Min, h.Max = 0, float64(len(precisionOrder)-1)
	h.NaN = color.White
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Precision by layer and component (%s policy)", r.Policy)
	p.X.Label.Text = "layer (−1: embeddings, last: head)"
	p.Add(h)
	p.NominalY(parts...)
	var ticks []plot.Tick
	for l := -1; l <= nLayers; l++ {
		ticks = append(ticks, plot.Tick{Value: float64(l), Label: strconv.Itoa(l)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Max = float64(nLayers) + 0.5 + 0.12*float64(nLayers+2) // room for the legend
	for _, name := range precisionOrder {
		p.Legend.Add(name, colorBox{precisionColors[name]})
	}
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.XOffs = vg.Points(-4)
	height := vg.Length(max(4, 0.25*float64(len(parts))+2)) * vg.Inch
	return render(p, 10*vg.Inch, height)
}

// ErrorVsBytes plots, for every matrix and candidate precision, the
// relative error against the bytes, with the chosen candidates ringed.
func ErrorVsBytes(r *importance.Report) ([]byte, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Measured error against bytes (%s policy)", r.Policy)
	p.X.Label.Text = "bytes (log)"
	p.Y.Label.Text = "relative error (log)"
	p.X.Scale = plot.LogScale{}
	p.Y.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: 1}
	p.Y.Tick.Marker = plot.LogTicks{Prec: 1}
	drawn := false
	// Explicit ranges: gonum widens a degenerate range (all points equal)
	// by ±1, which goes non-positive and breaks a log axis.
	xMin, xMax, yMin, yMax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, name := range []string{"int4", "int8", "f16"} {
		var all, chosen plotter.XYs
		for _, t := range r.Tensors {
			for _, c := range t.Candidates {
				if c.Precision.String() != name || c.Bytes <= 0 || c.RelError <= 0 || !c.Feasible {
					continue
				}
				xy := plotter.XY{X: float64(c.Bytes), Y: c.RelError}
				xMin, xMax = math.Min(xMin, xy.X), math.Max(xMax, xy.X)
				yMin, yMax = math.Min(yMin, xy.Y), math.Max(yMax, xy.Y)
				all = append(all, xy)
				if t.Precision == name {
					chosen = append(chosen, xy)
				}
			}
		}
		if len(all) == 0 {
			continue
		}
		s, err := plotter.NewScatter(all)
		if err != nil {
			return nil, err
		}
		drawn = true
		s.GlyphStyle.Color = precisionColors[name]
		s.GlyphStyle.Shape = draw.CircleGlyph{}
		s.GlyphStyle.Radius = vg.Points(2.5)
		p.Add(s)
		p.Legend.Add(name+" candidates", s)
		if len(chosen) > 0 {
			c, err := plotter.NewScatter(chosen)
			if err != nil {
				return nil, err
			}
			c.GlyphStyle.Color = precisionColors[name]
			c.GlyphStyle.Shape = draw.RingGlyph{}
			c.GlyphStyle.Radius = vg.Points(5)
			p.Add(c)
			p.Legend.Add(name+" chosen", c)
		}
	}
	if !drawn {
		return nil, ErrNoMatrices
	}
	p.X.Min, p.X.Max = xMin/2, xMax*2
	p.Y.Min, p.Y.Max = yMin/2, yMax*2
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return render(p, 8*vg.Inch, 5*vg.Inch)
}

// All renders the three charts of a report, named as they should be saved.
// A report without matrices gives no charts, not an error.
func All(r *importance.Report) ([]Chart, error) {
	fns := []struct {
		name string
		fn   func(*importance.Report) ([]byte, error)
	}{
		{"importance.png", Importance},
		{"precision-map.png", PrecisionMap},
		{"error-vs-bytes.png", ErrorVsBytes},
	}
	var out []Chart
	for _, f := range fns {
		b, err := f.fn(r)
		if errors.Is(err, ErrNoMatrices) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		out = append(out, Chart{f.name, b})
	}
	return out, nil
}

func plotColor(i int) color.Color {
	pal := []color.Color{
		color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
		color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
		color.RGBA{0xe3, 0x77, 0xc2, 0xff}, color.RGBA{0x7f, 0x7f, 0x7f, 0xff},
	}
	return pal[i%len(pal)]
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
