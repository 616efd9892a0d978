package keys

import "testing"

func TestTicketNamesItsInstance(t *testing.T) {
	tk := testTicket(t)
	tk.Instance = "0f3a9c2b7d1e4f60"
	got, err := ParseTicket(tk.String())
	if err != nil || got.Instance != tk.Instance {
		t.Fatalf("got %+v, %v", got, err)
	}
	// Tickets without an instance keep their old form and parse as before.
	tk.Instance = ""
	if got, err := ParseTicket(tk.String()); err != nil || got.Instance != "" {
		t.Fatalf("without instance: %+v, %v", got, err)
	}
	for _, bad := range []string{"UPPER", "a b", "x\n", "0123456789abcdef0123456789abcdef0"} {
		tk.Instance = bad
		if _, err := tk.marshal(); err == nil {
			t.Errorf("instance %q accepted", bad)
		}
	}
}
