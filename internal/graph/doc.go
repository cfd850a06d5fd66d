// Package graph delivers messages through Microsoft Graph, implementing
// the delivery contract of package transport. Recipients are checked
// locally at AddRcpt; the message is sent at Body: in one sendMail
// request (POST /v1.0/users/{mailbox}/sendMail, the MIME message in
// base64, Content-Type text/plain) when it fits one, else as a draft
// with its large parts attached (below).
//
// # Envelope fidelity
//
// Graph sends to the To, Cc and Bcc header fields, not to an envelope;
// the header section is fitted to the envelope first (package rcptfit
// says how).
//
// # What Graph cannot carry
//
// Graph takes no envelope, so the reverse-path is not passed on: Exchange
// sends from the mailbox, and bounces go to it. Graph has no DSN (RFC
// 3461): RET and ENVID are dropped as a relay to a server without DSN
// does (§5.2.2), and a NOTIFY that asks for more than failure notices is
// refused at RCPT (555 5.3.3) unless the caller sends its own notices
// (the queue), as package upstream does for an SMTP provider without DSN.
//
// # Messages over the request limit
//
// A request carries at most 4 MB, and MIME travels in base64, so sendMail
// takes messages of up to 3 MiB. A larger message is split along its MIME
// structure (RFC 2045, RFC 2046), reading it three times and never
// holding it: once to learn its structure and sizes, once to write the
// draft, once to upload the parts that left the draft.
//
//   - Leaf parts leave the draft, the largest first, until the rest fits
//     one request. Body text (text/* that is neither a named file nor
//     marked as an attachment, RFC 2183) never leaves; parts whose
//     transfer encoding is unknown or broken stay as they are.
//   - The draft is the fitted header section and every part that stays,
//     header fields byte for byte, with the preamble and epilogue of each
//     multipart dropped; POST .../messages creates it from MIME.
//   - Each part that left is decoded (base64, quoted-printable) and added
//     with its name (RFC 2231 and RFC 2047 decoded; "partN.ext" when it has
//     none), its media type (with the charset of text), its Content-ID and
//     whether it is inline (a Content-ID and no "attachment" disposition:
//     an inline part without a Content-ID could not be shown, Outlook
//     would hide it). Under 3,000,000 bytes it is POSTed whole to
//     .../attachments; from there it goes through an upload session
//     (createUploadSession, then PUTs of 10 × 320 KiB to the session's
//     pre-authenticated URL, which never sees the relay's token).
//   - POST .../messages/{id}/send sends the draft.
//
// Only that last request can leave a message possibly delivered: a lost
// answer to any other is a temporary failure, and the draft is deleted
// (DELETE .../messages/{id}, best effort, logged) whenever the sequence
// fails. When the answer to send is lost the draft is left in place and
// its id logged: if it is still among the mailbox's drafts, the message
// was not sent. A 401 is answered with a fresh token once per request.
//
// The sequence holds one of the mailbox's request slots from its first
// request to its last: its requests go one after another, so one slot is
// what it uses of Graph's four; it never waits for a slot with a draft
// in the mailbox; and it still has a slot to delete the draft with. At
// most two sequences of a mailbox run at once, so that small messages
// keep two slots while large ones upload for minutes.
//
// # Where Exchange rewrites the message
//
// sendMail and a MIME draft are not relayed byte for byte: Exchange
// converts the MIME into a mailbox item (a body, attachments, header
// properties) and builds new MIME when it sends. Known from Microsoft's
// documentation: the body and the attachments become separate
// properties; attachments are identified by name, content type,
// Content-ID and isInline; Bcc does not reach the recipients.
// Not documented, and assumed here from reports of Exchange's behaviour
// (this project has not verified it against Exchange Online): the
// structure is rebuilt (multipart/mixed, with multipart/alternative and
// multipart/related where the item has a text and an HTML body and
// inline attachments), transfer encodings are chosen anew (attachments in
// base64), boundaries, preambles and epilogues are new, and Message-ID,
// Date and the MIME header fields are Exchange's, while most other header
// fields (X-*, References, In-Reply-To) survive. Attachments that stayed
// in the draft come first and the uploaded ones follow in the message's
// order, so a split message's attachments can arrive in another order
// than they were written. A DKIM signature made by the client does not
// survive any of this; Exchange signs what it sends.
//
// # Limits
//
//   - sendMail: messages of up to 3 MiB (4 MB of base64).
//   - Drafts: what stays in the draft must fit 3 MiB; a message whose text
//     and body parts alone are larger is refused (552 5.3.4) with its size.
//   - Messages of more than 150 MiB (Exchange Online's largest MaxSendSize)
//     are refused at MAIL when SIZE declares them, else before reading
//     (552 5.3.4); so is an attachment over 150 MiB. The mailbox's own
//     MaxSendSize (35 MB by default) is Exchange's to enforce:
//     ErrorMessageSizeExceeded becomes 552 5.3.4.
//   - A large message's MIME structure must parse, with at most 1000
//     parts nested at most 32 deep and part headers of at most 64 KiB
//     (554 5.6.0 otherwise).
//   - Drafts, attachments and upload sessions need Mail.ReadWrite besides
//     Mail.Send: a 403 there refuses the message (550 5.7.1, advice in
//     the log) and counts for no circuit, as sendMail may still work.
//   - A failed upload is not resumed: the message fails temporarily and is
//     sent again from the start.
//   - At most 4 requests per mailbox are in flight from this process
//     (Graph's mailbox concurrency limit), at most 2 of them large
//     messages' sequences; further sends wait for a slot.
package graph
