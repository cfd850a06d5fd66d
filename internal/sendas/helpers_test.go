package sendas

// split divides head into the header section's fields, the empty line
// that ends it (nil when none), and what follows; complete is false when
// head ends before the header section does or it is malformed.
func split(head []byte, atEOF bool) (fl []field, rest, sep []byte, complete bool) {
	sc := fields{head: head, atEOF: atEOF}
	for f, more := sc.next(); more; f, more = sc.next() {
		fl = append(fl, f)
	}
	return fl, sc.rest, sc.sep, sc.complete && !sc.malformed
}
