package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// callbackTimeout bounds one Docker Hub callback, whatever HTTPClient says.
const callbackTimeout = 10 * time.Second

// dockerHubCallback is the body Docker Hub's callback_url expects.
type dockerHubCallback struct {
	State       string `json:"state"`
	Description string `json:"description"`
	Context     string `json:"context"`
}

// callbackAllowed reports whether raw is an https URL on an allowed host.
// The URL comes from an (authenticated) payload: without this check it would
// let whoever knows the token make the controller POST anywhere (SSRF).
func callbackAllowed(raw string, hosts []string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Host == "" || u.Opaque != "" {
		return nil, false
	}
	for _, h := range hosts {
		if hasPort(h) {
			if strings.EqualFold(u.Host, h) {
				return u, true
			}
			continue
		}
		if strings.EqualFold(u.Hostname(), h) && (u.Port() == "" || u.Port() == "443") {
			return u, true
		}
	}
	return nil, false
}

func hasPort(hostport string) bool {
	u := url.URL{Host: hostport}
	return u.Port() != ""
}

// callback reports success to a Docker Hub callback_url in the background,
// if the URL is allowed and a slot is free. Only the host is logged: the
// path identifies the hook.
func (s *Server) callback(raw string) {
	u, ok := callbackAllowed(raw, s.callbackHosts)
	if !ok {
		s.metrics.callbacks.WithLabelValues(callbackRefused).Inc()
		s.log.WithField("provider", ProviderDockerHub).Warn("Docker Hub callback_url refused: not https on an allowed host")
		return
	}
	select {
	case s.callbackSlots <- struct{}{}:
	default:
		s.metrics.callbacks.WithLabelValues(callbackDropped).Inc()
		s.log.WithField("host", u.Host).Warn("Docker Hub callback dropped: too many in flight")
		return
	}
	s.callbackWG.Go(func() {
		defer func() { <-s.callbackSlots }()
		if err := s.postCallback(u); err != nil {
			s.metrics.callbacks.WithLabelValues(callbackFailed).Inc()
			s.log.WithField("host", u.Host).WithField("error", err.Error()).Warn("Docker Hub callback failed")
			return
		}
		s.metrics.callbacks.WithLabelValues(callbackSent).Inc()
	})
}

func (s *Server) postCallback(u *url.URL) error {
	body, _ := json.Marshal(dockerHubCallback{State: "success", Description: "tagger check requested", Context: "tagger"})
	ctx, cancel := context.WithTimeout(context.Background(), callbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tagger-webhooks")
	resp, err := s.callbackClient.Do(req)
	if err != nil {
		// url.Error carries the full URL; report only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{code: resp.StatusCode}
	}
	return nil
}

type statusError struct{ code int }

func (e *statusError) Error() string {
	return "callback answered " + strconv.Itoa(e.code) + " " + http.StatusText(e.code)
}

// waitCallbacks waits for callbacks in flight; tests use it.
func (s *Server) waitCallbacks() { s.callbackWG.Wait() }
