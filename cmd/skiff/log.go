package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"
	"k8s.io/klog/v2"
)

// logFlags are the logging flags of the long-running commands (k3s has
// the same two).
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "debug", Usage: "log Skiff's debug messages", EnvVars: []string{"SKIFF_DEBUG"}},
		&cli.IntFlag{Name: "v", Usage: "log verbosity of the embedded Kubernetes components (klog -v: 2 is useful, 3 logs each API request served, 4 and up are debug)"},
	}
}

// logConfig is what the logging flags ask for.
type logConfig struct {
	Debug     bool
	Verbosity int
}

func logConfigFrom(c *cli.Context) (logConfig, error) {
	lc := logConfig{Debug: c.Bool("debug"), Verbosity: c.Int("v")}
	if lc.Verbosity < 0 {
		return lc, fmt.Errorf("-v %d: want a level of 0 or more", lc.Verbosity)
	}
	return lc, nil
}

// level is the slog level that shows what lc asks for: klog's V(n)
// messages arrive as slog.Level(-n).
func (lc logConfig) level() slog.Level {
	l := slog.LevelInfo
	if lc.Debug {
		l = slog.LevelDebug
	}
	return min(l, slog.Level(-lc.Verbosity))
}

// componentArgs are the flags that give the embedded components (the API
// server and controller manager apply their own --v when they start) the
// verbosity asked for.
func (lc logConfig) componentArgs() []string {
	if lc.Verbosity == 0 {
		return nil
	}
	return []string{"--v=" + strconv.Itoa(lc.Verbosity)}
}

// newLogger returns the process's logger, makes it slog's default and
// routes klog (every upstream component in the process) to it at the
// verbosity asked for.
func newLogger(lc logConfig) *slog.Logger {
	l := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lc.level()}))
	slog.SetDefault(l)
	klog.SetSlogLogger(l)
	var fs flag.FlagSet
	klog.InitFlags(&fs)
	_ = fs.Set("v", strconv.Itoa(lc.Verbosity)) // an int always parses
	return l
}
