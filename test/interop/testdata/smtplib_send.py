"""Sends one message through SMTP with Python's smtplib (standard library only).

Usage: python3 -I smtplib_send.py JOB.json

The job names the server, TLS mode, AUTH mechanism, envelope and message
file, and how to hand the message to smtplib ("bytes": sendmail() with the
file's bytes, "str": sendmail() with the file as a str, "message":
send_message() with an email.message.EmailMessage parsed from the file).
The content smtplib puts on the wire (before dot-stuffing) is written to
job["sent"], so the test can compare it with what the provider received.
"""

import email
import email.policy
import json
import re
import smtplib
import ssl
import sys


def wire_content(msg):
    """What smtplib.SMTP.data() sends for msg, before dot-stuffing.

    A str has its lone CR and LF turned into CRLF and is encoded as ASCII;
    bytes are sent unchanged; a CRLF is added unless the data ends with one
    (smtplib documentation, SMTP.sendmail and SMTP.data).
    """
    if isinstance(msg, str):
        msg = re.sub(r"(?:\r\n|\n|\r(?!\n))", "\r\n", msg).encode("ascii")
    if msg[-2:] != b"\r\n":
        msg += b"\r\n"
    return msg


def connect(job):
    ctx = ssl.create_default_context(cafile=job["cafile"])
    if job["tls"] == "implicit":
        return smtplib.SMTP_SSL(job["host"], job["port"], context=ctx, timeout=120)
    s = smtplib.SMTP(job["host"], job["port"], timeout=120)
    s.starttls(context=ctx)
    return s


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    s = connect(job)
    s.user, s.password = job["user"], job["password"]
    s.ehlo_or_helo_if_needed()
    mech = job["mech"]
    s.auth(mech, {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech])

    data = s.data

    def recording_data(msg):
        with open(job["sent"], "wb") as out:
            out.write(wire_content(msg))
        return data(msg)

    s.data = recording_data
    with open(job["file"], "rb") as f:
        raw = f.read()
    mail_options, rcpt_options = job["mail_options"] or [], job["rcpt_options"] or []
    if job["mode"] == "message":
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        refused = s.send_message(msg, job["from"], job["rcpts"], mail_options, rcpt_options)
    else:
        payload = raw.decode("ascii") if job["mode"] == "str" else raw
        refused = s.sendmail(job["from"], job["rcpts"], payload, mail_options, rcpt_options)
    if refused:
        sys.exit("recipients refused: %r" % refused)
    s.quit()
    print("sent with AUTH %s, MAIL options %s" % (mech, " ".join(mail_options) or "none"))


if __name__ == "__main__":
    main()
