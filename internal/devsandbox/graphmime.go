package devsandbox

import (
	"bytes"
	"encoding/base64"
	"mime"
	"net/mail"
	"strings"
)

// withAttachments renders a draft with the files attached to it, as
// Exchange does when it sends the draft: the attachments become parts of a
// multipart/mixed message (RFC 2046 §5.1.3) after the draft's own content.
func withAttachments(draft []byte, atts []graphAttachment) []byte {
	if len(atts) == 0 {
		return draft
	}
	header, body := splitMessage(draft)
	msg, err := mail.ReadMessage(bytes.NewReader(draft))
	if err == nil {
		mt, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if mt == "multipart/mixed" && params["boundary"] != "" {
			closing := []byte("\r\n--" + params["boundary"] + "--")
			if i := bytes.LastIndex(body, closing); i >= 0 {
				var out bytes.Buffer
				out.Write(header)
				out.WriteString("\r\n")
				out.Write(body[:i+2])
				for _, a := range atts {
					writeAttachmentPart(&out, params["boundary"], a)
				}
				out.Write(body[i+2:])
				return out.Bytes()
			}
		}
	}
	return wrapMixed(header, body, atts)
}

// wrapMixed makes a single-part message the first part of a new
// multipart/mixed one.
func wrapMixed(header, body []byte, atts []graphAttachment) []byte {
	boundary := "sandbox-" + randomHex(12)
	contentHeaders := "Content-Type: text/plain; charset=us-ascii\r\n"
	if ct := fieldLines(header, "Content-Type", "Content-Transfer-Encoding"); ct != "" {
		contentHeaders = ct
	}
	header = removeHeaderField(removeHeaderField(removeHeaderField(header, "Content-Type"), "Content-Transfer-Encoding"), "MIME-Version")
	var out bytes.Buffer
	out.Write(header)
	out.WriteString("MIME-Version: 1.0\r\nContent-Type: " + mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": boundary}) + "\r\n\r\n")
	out.WriteString("--" + boundary + "\r\n" + contentHeaders + "\r\n")
	out.Write(body)
	out.WriteString("\r\n")
	for _, a := range atts {
		writeAttachmentPart(&out, boundary, a)
	}
	out.WriteString("--" + boundary + "--\r\n")
	return out.Bytes()
}

// writeAttachmentPart writes "--boundary" and one base64 attachment part.
func writeAttachmentPart(out *bytes.Buffer, boundary string, a graphAttachment) {
	// Graph's contentType may carry parameters (a text file's charset);
	// the file's name is added to them.
	ct, params, err := mime.ParseMediaType(a.contentType)
	if err != nil || ct == "" {
		ct, params = "application/octet-stream", map[string]string{}
	}
	params["name"] = a.name
	disposition := "attachment"
	if a.inline {
		disposition = "inline"
	}
	out.WriteString("--" + boundary + "\r\n")
	out.WriteString("Content-Type: " + mime.FormatMediaType(ct, params) + "\r\n")
	out.WriteString("Content-Disposition: " + mime.FormatMediaType(disposition, map[string]string{"filename": a.name}) + "\r\n")
	if a.contentID != "" {
		out.WriteString("Content-ID: <" + strings.Trim(a.contentID, "<>") + ">\r\n")
	}
	out.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(a.data)
	for len(enc) > 76 { // RFC 2045 §6.8
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc + "\r\n")
}

// splitMessage returns the header section (with its final CRLF, without
// the empty line) and the body.
func splitMessage(raw []byte) (header, body []byte) {
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		return raw, nil
	}
	return raw[:i+2], raw[i+4:]
}

// fieldLines returns the named header fields of header, with their
// continuation lines, as they appear.
func fieldLines(header []byte, names ...string) string {
	var out strings.Builder
	keep := false
	for _, line := range bytes.SplitAfter(header, []byte("\r\n")) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if keep {
				out.Write(line)
			}
			continue
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		keep = false
		for _, n := range names {
			keep = keep || strings.EqualFold(strings.TrimSpace(string(name)), n)
		}
		if keep {
			out.Write(line)
		}
	}
	return out.String()
}
