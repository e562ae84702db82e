package report

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// document renders the Markdown and HTML reports.
type document struct {
	opt    Options
	rows   []Row
	figs   []*figure
	tables []*table
}

// headline summarises the study in a few sentences.
func (d *document) headline() []string {
	var out []string
	ok, failed := 0, 0
	for _, r := range d.rows {
		if r.OK {
			ok++
		} else {
			failed++
		}
	}
	out = append(out, fmt.Sprintf("%d experiments: %d finished, %d failed.", len(d.rows), ok, failed))
	fr := ComputeFronts(d.rows)
	var front []string
	for _, r := range d.rows {
		if fr.F1BPW[r.Name()] {
			front = append(front, fmt.Sprintf("%s (%.2f bpw, F1 %.1f%%)", r.Name(), r.LinearBPW(), 100*r.CoQA.F1))
		}
	}
	if len(front) > 0 {
		out = append(out, "Pareto frontier of CoQA F1 against bits per weight: "+strings.Join(front, ", ")+".")
	}
	for _, r := range d.rows {
		if r.Bench != nil {
			dv := r.Bench.Device
			dev := fmt.Sprintf("%s backend on %s (%d threads)", dv.Backend, orDash(dv.CPU), dv.Threads)
			if g := dv.GPU; g != nil {
				dev = fmt.Sprintf("%s backend on %s, driver %s, SM clock %d MHz", dv.Backend, g.Name, g.Driver, g.SMClockMHz)
			}
			out = append(out, "Benchmarks ran on the "+dev+".")
			break
		}
	}
	for _, r := range d.rows {
		if r.CoQA != nil {
			lim := "all stories"
			if r.CoQA.Limit > 0 {
				lim = fmt.Sprintf("the first %d stories", r.CoQA.Limit)
			}
			out = append(out, fmt.Sprintf("CoQA protocol %s on %s (%d questions per experiment).", r.CoQA.Protocol, lim, r.CoQA.N))
			break
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (d *document) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", d.opt.Title)
	fmt.Fprintf(&b, "Generated %s by qreport from `%s`.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), d.opt.Results)
	for _, h := range d.headline() {
		fmt.Fprintf(&b, "- %s\n", h)
	}
	b.WriteString("\n## Figures\n\n")
	for _, f := range d.figs {
		fmt.Fprintf(&b, "### %s\n\n![%s](figures/%s.png)\n\n%s ([SVG](figures/%s.svg))\n\n", f.title, f.title, f.name, f.caption, f.name)
	}
	b.WriteString("## Tables\n\n")
	for _, t := range d.tables {
		fmt.Fprintf(&b, "### %s\n\n[%s](%s)\n\n", t.title, t.file, t.file)
		b.WriteString("| " + strings.Join(t.header, " | ") + " |\n")
		b.WriteString("|" + strings.Repeat(" --- |", len(t.header)) + "\n")
		for _, r := range t.rows {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = strings.ReplaceAll(strings.ReplaceAll(c, "|", `\|`), "\n", " ")
			}
			b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

var htmlTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.8em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.95em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;white-space:nowrap}
th{background:#f3f3f3}tr.failed td{color:#a00}
nav a{margin-right:1em}
</style></head><body>
<h1>{{.Title}}</h1>
<p>Generated {{.When}} by qreport from <code>{{.Results}}</code>.</p>
<ul>{{range .Headline}}<li>{{.}}</li>{{end}}</ul>
<nav>{{range .Figures}}<a href="#fig-{{.Name}}">{{.Title}}</a> {{end}}</nav>
<h2>Figures</h2>
{{range .Figures}}<figure id="fig-{{.Name}}">
<img alt="{{.Title}}" src="data:image/png;base64,{{.PNG}}" data-figure="figures/{{.Name}}.png">
<figcaption><b>{{.Title}}.</b> {{.Caption}} Files: <a href="figures/{{.Name}}.png">figures/{{.Name}}.png</a>, <a href="figures/{{.Name}}.svg">figures/{{.Name}}.svg</a>.</figcaption>
</figure>
{{end}}
<h2>Tables</h2>
{{range .Tables}}<h3>{{.Title}} (<a href="{{.File}}">{{.File}}</a>)</h3>
<table><thead><tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr></thead><tbody>
{{range .Rows}}<tr{{if .Failed}} class="failed"{{end}}>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}</tbody></table>
{{end}}
</body></html>
`))

type htmlFig struct {
	Name, Title, Caption string
	PNG                  string // base64
}

type htmlRow struct {
	Cells  []string
	Failed bool
}

type htmlTable struct {
	Title, File string
	Header      []string
	Rows        []htmlRow
}

// html renders the self-contained report, embedding the PNGs from figDir.
func (d *document) html(figDir string) ([]byte, error) {
	data := struct {
		Title, When, Results string
		Headline             []string
		Figures              []htmlFig
		Tables               []htmlTable
	}{Title: d.opt.Title, When: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Results: d.opt.Results, Headline: d.headline()}
	for _, f := range d.figs {
		png, err := os.ReadFile(filepath.Join(figDir, f.name+".png"))
		if err != nil {
			return nil, err
		}
		data.Figures = append(data.Figures, htmlFig{Name: f.name, Title: f.title, Caption: f.caption, PNG: base64.StdEncoding.EncodeToString(png)})
	}
	for _, t := range d.tables {
		ht := htmlTable{Title: t.title, File: t.file, Header: t.header}
		status := -1
		for i, h := range t.header {
			if h == "status" {
				status = i
			}
		}
		for _, r := range t.rows {
			ht.Rows = append(ht.Rows, htmlRow{Cells: r, Failed: status >= 0 && r[status] != "ok"})
		}
		data.Tables = append(data.Tables, ht)
	}
	var buf bytes.Buffer
	if err := htmlTmpl.Execute(&buf, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
