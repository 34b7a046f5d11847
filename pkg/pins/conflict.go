package pins

import "time"

// Claim is one Tag's claim on a normalized image reference.
type Claim struct {
	Name    string
	Image   string // normalized reference
	Created time.Time
}

// Older reports whether a wins over b for the same image: the older Tag wins,
// ties broken by name so every controller replica and node agrees.
func Older(a, b Claim) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}

// Winners maps each image to the name of the Tag that serves it.
func Winners(claims []Claim) map[string]string {
	best := make(map[string]Claim, len(claims))
	for _, c := range claims {
		if cur, ok := best[c.Image]; !ok || Older(c, cur) {
			best[c.Image] = c
		}
	}
	out := make(map[string]string, len(best))
	for img, c := range best {
		out[img] = c.Name
	}
	return out
}
