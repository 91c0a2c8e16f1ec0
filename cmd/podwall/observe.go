package main

import (
	"net/http"

	"github.com/podwall/podwall/datapath"
)

// This file owns what the agent does with each verdict and what it shows on the debug
// listener.

// observe is called by the datapath for every verdict, on a queue reader's goroutine. It
// must not block.
func (a *agent) observe(r *datapath.Record) {
	a.metrics.observe(r)
}

// debugRoutes adds the agent's own pages to the debug listener.
func (a *agent) debugRoutes(mux *http.ServeMux) {}
