package heapprof

import (
	"runtime"
	"testing"
)

func TestFlagOn(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{"absent", []string{"--v=2"}, false},
		{"bare", []string{"--profiling"}, true},
		{"true", []string{"--profiling=true"}, true},
		{"false", []string{"--profiling=false"}, false},
		{"last wins on", []string{"--profiling=false", "--v=2", "--profiling=true"}, true},
		{"last wins off", []string{"--profiling", "--profiling=false"}, false},
		{"single dash", []string{"-profiling=1"}, true},
		{"not a boolean is ignored", []string{"--profiling=true", "--profiling=maybe"}, true},
		{"prefix of another flag", []string{"--profiling-port=1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FlagOn(tt.args, "profiling"); got != tt.want {
				t.Errorf("FlagOn(%q) = %v, want %v", tt.args, got, tt.want)
			}
		})
	}
}

func TestOffOn(t *testing.T) {
	orig := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = orig })
	tests := []struct {
		name    string
		godebug string
		set     func()
		want    int
	}{
		{"off", "", Off, 0},
		{"on", "", On, GoDefaultRate},
		{"off, other GODEBUG settings", "gctrace=0,madvdontneed=1", Off, 0},
		{"off keeps the user's rate", "gctrace=0, memprofilerate=4096", Off, 4096},
		{"on keeps the user's rate", "memprofilerate=4096", On, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GODEBUG", tt.godebug)
			runtime.MemProfileRate = 4096 // stands for the rate the runtime took from GODEBUG
			tt.set()
			if runtime.MemProfileRate != tt.want {
				t.Errorf("MemProfileRate = %d, want %d", runtime.MemProfileRate, tt.want)
			}
		})
	}
}
