// Package kubectli18n keeps the embedded kubectl's translations from
// loading in Skiff processes that are not `skiff kubectl`.
//
// kubectl's command packages call i18n.T in their package variables, so
// the translation catalog (~4.4 MB allocated, ~25 ms) would load during
// package initialisation of every process of the multicall binary: the
// server, the agent and its containerd. This package must therefore act
// before those packages initialise, which only package initialisation can
// do: Go initialises packages in import-path order once their imports are
// (the spec, since Go 1.21), and this path sorts before k8s.io/kubectl/...,
// so importing it from main (the one place that does) is enough.
package kubectli18n

import (
	"os"

	"k8s.io/kubectl/pkg/util/i18n"
)

// A package variable's initialiser, so it runs at this package's
// initialisation.
var _ = skipUnlessKubectl(os.Args)

func skipUnlessKubectl(args []string) struct{} {
	if len(args) < 2 || args[1] != "kubectl" {
		// Untranslated: T returns its English default text.
		i18n.LoadTranslationsFunc = func() error { return nil }
	}
	return struct{}{}
}
