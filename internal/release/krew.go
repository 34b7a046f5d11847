package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// KrewManifestFile is the krew plugin manifest's name: krew takes the
// plugin's name from it (kubectl krew install --manifest=tag.yaml).
const KrewManifestFile = "tag.yaml"

// DefaultDownloadURL is where a GitHub release keeps its files.
const DefaultDownloadURL = "https://github.com/tagger-project/tagger/releases/download/{version}/{file}"

// krewPlugin is krew's Plugin manifest (apiVersion
// krew.googlecontainertools.github.com/v1alpha2), the fields tagger fills.
type krewPlugin struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   krewMetadata `json:"metadata"`
	Spec       krewSpec     `json:"spec"`
}

type krewMetadata struct {
	Name string `json:"name"`
}

type krewSpec struct {
	Version          string         `json:"version"`
	Homepage         string         `json:"homepage"`
	ShortDescription string         `json:"shortDescription"`
	Description      string         `json:"description"`
	Caveats          string         `json:"caveats"`
	Platforms        []krewPlatform `json:"platforms"`
}

type krewPlatform struct {
	Selector krewSelector `json:"selector"`
	URI      string       `json:"uri"`
	Sha256   string       `json:"sha256"`
	Files    []krewFile   `json:"files"`
	Bin      string       `json:"bin"`
}

type krewSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type krewFile struct {
	From string `json:"from"`
	To   string `json:"to"`
}

const krewDescription = `Works with tagger's Tag objects: pin an image tag to the digest it points
at, follow the tag as it moves, and see which digest every node pulls.
Needs tagger installed in the cluster (its Helm chart).
`

const krewCaveats = `This plugin needs tagger's CRDs and controller in the cluster:
  helm install tagger oci://ghcr.io/tagger-project/charts/tagger
`

// downloadURL fills the {version} and {file} placeholders.
func downloadURL(pattern, version, file string) string {
	return strings.NewReplacer("{version}", version, "{file}", file).Replace(pattern)
}

// KrewManifest generates the krew manifest from the archives in dir (by
// platform): a platform per archive, its sha256 read from the file.
func KrewManifest(dir, version, urlPattern string, archives map[Platform]string) ([]byte, error) {
	platforms := make([]Platform, 0, len(archives))
	for p := range archives {
		platforms = append(platforms, p)
	}
	sort.Slice(platforms, func(i, j int) bool { return platforms[i].String() < platforms[j].String() })
	m := krewPlugin{
		APIVersion: "krew.googlecontainertools.github.com/v1alpha2",
		Kind:       "Plugin",
		Metadata:   krewMetadata{Name: strings.TrimPrefix(PluginName, "kubectl-")},
		Spec: krewSpec{
			Version:          version,
			Homepage:         "https://github.com/tagger-project/tagger",
			ShortDescription: "Pin image tags to digests across the cluster",
			Description:      krewDescription,
			Caveats:          krewCaveats,
		},
	}
	for _, p := range platforms {
		file := archives[p]
		sum, err := fileSHA256(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		bin := exeName(PluginName, p)
		m.Spec.Platforms = append(m.Spec.Platforms, krewPlatform{
			Selector: krewSelector{MatchLabels: map[string]string{"os": p.OS, "arch": p.Arch}},
			URI:      downloadURL(urlPattern, version, file),
			Sha256:   sum,
			Files:    []krewFile{{From: bin, To: "."}, {From: "LICENSE", To: "."}},
			Bin:      bin,
		})
	}
	return yaml.Marshal(m)
}

func writeKrewManifest(c *Config, archives map[Platform]string) (string, error) {
	pattern := c.DownloadURL
	if pattern == "" {
		pattern = DefaultDownloadURL
	}
	b, err := KrewManifest(c.Out, c.Version, pattern, archives)
	if err != nil {
		return "", fmt.Errorf("krew manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.Out, KrewManifestFile), b, 0o644); err != nil {
		return "", err
	}
	return KrewManifestFile, nil
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}
