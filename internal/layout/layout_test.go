// Package layout checks the shape of the tree: the controller side and the
// node side of tagger never link each other, and the shared packages below
// them link neither. A node binary that carried the controller would also
// carry its metric registrations, webhooks and copier.
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tagger-project/tagger/"

// side names which half of tagger a package belongs to; "" is neither
// (test rigs, tools, the kubectl plugin).
func side(pkg string) string {
	p := strings.TrimPrefix(pkg, module)
	switch {
	case p == "cmd/controller", p == "pkg/controller", strings.HasPrefix(p, "pkg/controller/"), p == "pkg/hooks":
		return "controller"
	case p == "cmd/node-agent", p == "pkg/node", strings.HasPrefix(p, "pkg/node/"), p == "pkg/mirror":
		return "node"
	case p == "pkg/pins", p == "pkg/registryclient", p == "pkg/logging", p == "pkg/httplimits", p == "pkg/version", strings.HasPrefix(p, "api/"):
		return "shared"
	}
	return ""
}

// allowed says whether a package of side from may depend on one of side to.
func allowed(from, to string) bool {
	switch from {
	case "controller", "node":
		return to == "" || to == "shared" || to == from
	case "shared":
		return to == "" || to == "shared"
	}
	return true
}

type listed struct {
	ImportPath string
	Deps       []string
}

func TestSidesDoNotLinkEachOther(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	var checked int
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		from := side(p.ImportPath)
		if from == "" {
			continue
		}
		checked++
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, module) {
				continue
			}
			if to := side(d); !allowed(from, to) {
				t.Errorf("%s (%s side) links %s (%s side)", strings.TrimPrefix(p.ImportPath, module), from, strings.TrimPrefix(d, module), to)
			}
		}
	}
	// Guards against a go list that matched nothing: every side must be seen.
	if checked < 10 {
		t.Fatalf("only %d tagger packages classified; the layout rules are out of date", checked)
	}
}

func TestSideClassification(t *testing.T) {
	for pkg, want := range map[string]string{
		"cmd/controller":           "controller",
		"pkg/controller/imagecopy": "controller",
		"pkg/hooks":                "controller",
		"cmd/node-agent":           "node",
		"pkg/node/hoststoml":       "node",
		"pkg/mirror":               "node",
		"pkg/pins":                 "shared",
		"pkg/registryclient":       "shared",
		"api/v1alpha1":             "shared",
		"internal/rig":             "",
		"pkg/controllerfoo":        "",
		"pkg/nodes":                "",
	} {
		if got := side(module + pkg); got != want {
			t.Errorf("side(%s) = %q, want %q", pkg, got, want)
		}
	}
	for _, c := range []struct {
		from, to string
		ok       bool
	}{
		{"node", "controller", false},
		{"controller", "node", false},
		{"shared", "node", false},
		{"shared", "controller", false},
		{"node", "shared", true},
		{"controller", "shared", true},
		{"", "controller", true},
	} {
		if got := allowed(c.from, c.to); got != c.ok {
			t.Errorf("allowed(%q, %q) = %v, want %v", c.from, c.to, got, c.ok)
		}
	}
}
