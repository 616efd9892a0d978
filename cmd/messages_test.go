package cmd

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"kin/transport"
)

// hintOf prints err as a user sees it.
func shown(err error) string {
	var b bytes.Buffer
	printError(&b, err)
	return b.String()
}

// The transport says there is no route; cmd says what to do about it.
func TestNoRouteGetsDoctorHint(t *testing.T) {
	err := dialError(fmt.Errorf("%w: ICE did not connect", transport.ErrNoRoute), "bob", "ws://x:7000")
	if !errors.Is(err, transport.ErrNoRoute) || !strings.Contains(shown(err), "hint: run kin doctor") {
		t.Errorf("no route shows as:\n%s", shown(err))
	}
}
