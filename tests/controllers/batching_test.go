package controllers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-sh/skiff/agent/nodesim"
)

// batchHints reads the scheduler's count of pods placed on the node that
// opportunistic batching hinted (scheduler_batch_attempts_total with
// result="hint_used") from the server's /metrics.
func batchHints(t *testing.T, cs kubernetes.Interface) float64 {
	t.Helper()
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "scheduler_batch_attempts_total{") || !strings.Contains(line, `result="hint_used"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestSchedulingBatchesUnconstrainedPods: with the scheduler's default
// configuration (system default topology spreading), identical bare pods
// are placed through opportunistic batching. Upstream's PodTopologySpread
// signs no pod while default constraints exist, so on an unpatched
// scheduler the count never moves (Skiff's patch 0010 to
// k8s.io/kubernetes signs the pods those defaults leave unconstrained).
// The count is the server's, so pods of tests running alongside may add
// to it; none can while the plugin refuses every pod.
func TestSchedulingBatchesUnconstrainedPods(t *testing.T) {
	t.Parallel()
	_, poolName := pool(t, 3, nodesim.Config{})
	ns := namespace(t)
	cs := admin(t)
	before := batchHints(t, cs)
	const n = 30
	for i := range n {
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("batch-%02d", i), Labels: map[string]string{"app": "batch"}},
			Spec: v1.PodSpec{
				NodeSelector: map[string]string{"pool": poolName},
				Containers: []v1.Container{{Name: "c", Image: wlImage, Resources: v1.ResourceRequirements{
					Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("10m")}}}},
			},
		}
		if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %d: %v", i, err)
		}
	}
	wlWaitPods(t, cs, ns, "app=batch", 60*time.Second, "all pods bound", func(pods []v1.Pod) bool {
		bound := 0
		for _, p := range pods {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		return bound == n
	})
	if after := batchHints(t, cs); after <= before {
		t.Fatalf("scheduler_batch_attempts_total{result=\"hint_used\"}: %v before, %v after scheduling %d identical bare pods; want an increase", before, after, n)
	}
}
