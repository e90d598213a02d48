package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// The API call latency SLOs of Kubernetes' sig-scalability
// (community/sig-scalability/slos/api_call_latency.md) are defined on the
// server's side: the time from the API server receiving a request to the
// last byte of its response, p99 over 5 minutes, per (resource, verb) for
// mutating calls (≤ 1 s) and per (resource, scope) for non-streaming reads
// (≤ 1 s for one object, 5 s for a namespace, 30 s for the cluster).
// sloSampler measures them the way clusterloader2 does, from the API
// server's apiserver_request_duration_seconds histogram: it scrapes
// /metrics every interval and reports, for each class, the worst pair's
// p99 over the worst 5-minute window of the measured phase (the whole
// phase when it is shorter). The tool's own client-side latencies (apiStats)
// add its connection and its share of the host's CPU on top.

const (
	sloWindow    = 5 * time.Minute
	sloMetric    = "apiserver_request_duration_seconds_bucket"
	sloQuantile  = 0.99
	sloMutating  = "mutating"
	sloResource  = "read_resource"
	sloNamespace = "read_namespace"
	sloCluster   = "read_cluster"
)

// sloLimits are the SLOs in seconds by class.
var sloLimits = map[string]float64{sloMutating: 1, sloResource: 1, sloNamespace: 5, sloCluster: 30}

// sloStats is what the result reports: per class the worst pair.
type sloStats struct {
	WindowS float64             `json:"window_s"`
	Samples int                 `json:"samples"`
	Classes map[string]sloWorst `json:"classes"`
	// Mutating is the worst mutating pair of each window, by the window's
	// end (seconds after the first sample), to show when it was slow.
	Mutating []sloAt `json:"mutating_by_window,omitempty"`
}

type sloAt struct {
	EndS  float64 `json:"end_s"`
	Pair  string  `json:"pair"`
	P99ms float64 `json:"p99_ms"`
	Count float64 `json:"count"`
}

type sloWorst struct {
	Pair    string  `json:"pair"`
	P99ms   float64 `json:"p99_ms"`
	Count   float64 `json:"count"` // requests of the pair in that window
	LimitMs float64 `json:"slo_ms"`
	Met     bool    `json:"met"`
}

// histogram is one pair's cumulative bucket counts by upper bound (le);
// the last bound is +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

// latencyHistograms groups one scrape's request-duration buckets by SLO
// pair ("class pair"), summing over the labels the SLO does not split by.
func latencyHistograms(m metrics) map[string]*histogram {
	byBound := map[string]map[float64]float64{}
	for series, v := range m {
		rest, ok := strings.CutPrefix(series, sloMetric+"{")
		if !ok {
			continue
		}
		labels, err := parseLabels(strings.TrimSuffix(rest, "}"))
		if err != nil {
			continue
		}
		pair := sloPair(labels)
		if pair == "" {
			continue
		}
		le, err := strconv.ParseFloat(labels["le"], 64) // "+Inf" parses as +Inf
		if err != nil {
			continue
		}
		if byBound[pair] == nil {
			byBound[pair] = map[float64]float64{}
		}
		byBound[pair][le] += v
	}
	out := make(map[string]*histogram, len(byBound))
	for pair, b := range byBound {
		h := &histogram{}
		for le := range b {
			h.bounds = append(h.bounds, le)
		}
		slices.Sort(h.bounds)
		for _, le := range h.bounds {
			h.counts = append(h.counts, b[le])
		}
		out[pair] = h
	}
	return out
}

// sloPair returns "class pair" for a request's labels, or "" for what the
// SLOs leave out: watches, streaming subresources and non-resource paths.
func sloPair(l map[string]string) string {
	res := l["resource"]
	if res == "" {
		return ""
	}
	switch l["subresource"] {
	case "log", "exec", "portforward", "attach", "proxy":
		return ""
	case "":
	default:
		res += "/" + l["subresource"]
	}
	switch verb := l["verb"]; verb {
	case "POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION":
		return sloMutating + " " + res + " " + verb
	case "GET", "LIST":
		switch l["scope"] {
		case "resource":
			return sloResource + " " + res
		case "namespace":
			return sloNamespace + " " + res
		case "cluster":
			return sloCluster + " " + res
		}
	}
	return ""
}

// parseLabels parses a Prometheus text-format label list: a="x",b="y\"z".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, fmt.Errorf("bad label list %q", s)
		}
		name := s[:eq]
		// The value is a quoted string with \\, \" and \n escapes.
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		if i >= len(s) {
			return nil, fmt.Errorf("unterminated label value in %q", s)
		}
		v, err := strconv.Unquote(s[eq+1 : i+1])
		if err != nil {
			return nil, fmt.Errorf("label %s: %w", name, err)
		}
		out[name] = v
		s = strings.TrimPrefix(s[i+1:], ",")
	}
	return out, nil
}

// quantile is Prometheus' histogram_quantile over the increase from a to b
// (a may be nil: from zero). It returns NaN when nothing was observed, and
// the highest finite bound when the quantile falls in the +Inf bucket.
func quantile(q float64, a, b *histogram) (value, count float64) {
	if b == nil || len(b.bounds) < 2 {
		return math.NaN(), 0
	}
	inc := make([]float64, len(b.counts))
	for i, c := range b.counts {
		inc[i] = c
		if a != nil {
			if j, ok := slices.BinarySearch(a.bounds, b.bounds[i]); ok {
				inc[i] -= a.counts[j]
			}
		}
	}
	total := inc[len(inc)-1]
	if total <= 0 {
		return math.NaN(), 0
	}
	rank := q * total
	i := 0
	for i < len(inc) && inc[i] < rank {
		i++
	}
	if i >= len(inc)-1 { // the +Inf bucket
		return b.bounds[len(b.bounds)-2], total
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = b.bounds[i-1], inc[i-1]
	}
	inBucket := inc[i] - below
	if inBucket <= 0 {
		return b.bounds[i], total
	}
	return lower + (b.bounds[i]-lower)*(rank-below)/inBucket, total
}

type sloSample struct {
	at    time.Time
	hists map[string]*histogram
}

type sloSampler struct {
	mu      sync.Mutex
	samples []sloSample
}

func (s *sloSampler) add(at time.Time, m metrics) {
	if m == nil {
		return
	}
	h := latencyHistograms(m)
	s.mu.Lock()
	s.samples = append(s.samples, sloSample{at: at, hists: h})
	s.mu.Unlock()
}

// run scrapes every interval until ctx ends.
func (s *sloSampler) run(ctx context.Context, c kubernetes.Interface, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.add(time.Now(), scrape(ctx, c))
		}
	}
}

// stats returns the worst pair of each class over every window of up to
// sloWindow between two samples (each window ending at a sample starts at
// the earliest sample within sloWindow before it, or at the first).
func (s *sloSampler) stats() *sloStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < 2 {
		return nil
	}
	out := &sloStats{Samples: len(s.samples), Classes: map[string]sloWorst{}}
	start := 0
	for end := 1; end < len(s.samples); end++ {
		for s.samples[end].at.Sub(s.samples[start].at) > sloWindow && start < end-1 {
			start++
		}
		a, b := s.samples[start], s.samples[end]
		out.WindowS = max(out.WindowS, b.at.Sub(a.at).Seconds())
		at := sloAt{EndS: math.Round(b.at.Sub(s.samples[0].at).Seconds())}
		for pair, hb := range b.hists {
			v, n := quantile(sloQuantile, a.hists[pair], hb)
			if math.IsNaN(v) {
				continue
			}
			class, name, _ := strings.Cut(pair, " ")
			if class == sloMutating && v*1000 > at.P99ms {
				at.Pair, at.P99ms, at.Count = name, math.Round(v*1e6)/1e3, n
			}
			if w, ok := out.Classes[class]; ok && w.P99ms >= v*1000 {
				continue
			}
			limit := sloLimits[class]
			out.Classes[class] = sloWorst{Pair: name, P99ms: math.Round(v*1e6) / 1e3, Count: n, LimitMs: limit * 1000, Met: v <= limit}
		}
		if at.Pair != "" {
			out.Mutating = append(out.Mutating, at)
		}
	}
	return out
}
