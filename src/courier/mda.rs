//! Local delivery through an MDA command (`local_delivery: {"mda": [...]}`, SPEC §3).
//!
//! Each argument of the template may hold `%from%`, `%from_user%`, `%from_domain%`, `%to%`,
//! `%to_user%`, `%to_domain%` (chasquid's set), replaced in one pass (a value that itself
//! contains `%to%` is not replaced again). A value stays inside its own argument, whatever it
//! contains: there is no shell to split or interpret it.
//!
//! The message goes to the MDA unchanged, as chasquid's MDA courier does
//! (internal/courier/mda.go): no `Return-Path` is prepended. The MDA learns the envelope
//! sender from its command line (`-f %from%`) and writes `Return-Path` itself (maildrop,
//! procmail, dovecot-lda); Postfix's local(8) prepends one, but then an MDA that adds its own
//! leaves two. The environment carries `SENDER` and `RECIPIENT` as well (Postfix's names).

use crate::addr::Address;
use crate::courier::{DeliveryError, command};
use crate::message::StoredMessage;
use std::time::Duration;

/// Delivers `item` to `to` by running `argv_template` with the envelope substituted.
pub async fn deliver(
    argv_template: &[String],
    from: &str,
    to: &Address,
    item: &StoredMessage,
    limit: Duration,
) -> Result<(), DeliveryError> {
    let vars = Vars::new(from, to)?;
    let argv: Vec<String> = argv_template.iter().map(|a| vars.substitute(a)).collect();
    let env = [
        ("SENDER".to_string(), vars.from.clone()),
        ("RECIPIENT".to_string(), vars.to.clone()),
    ];
    command::run(&argv, &env, item, b"", limit).await
}

/// The values the placeholders stand for.
#[derive(Debug)]
struct Vars {
    from: String,
    from_user: String,
    from_domain: String,
    to: String,
    to_user: String,
    to_domain: String,
}

impl Vars {
    /// The null reverse-path (`<>`, stored as empty) becomes the empty string.
    fn new(from: &str, to: &Address) -> Result<Vars, DeliveryError> {
        let from = if from == "<>" { "" } else { from };
        let (from_user, from_domain) = match from.rsplit_once('@') {
            Some((user, domain)) => (user, domain),
            None => (from, ""),
        };
        let vars = Vars {
            from: from.to_string(),
            from_user: from_user.to_string(),
            from_domain: from_domain.to_string(),
            to: to.to_string(),
            to_user: to.local().as_str().to_string(),
            to_domain: to.domain().as_str().to_string(),
        };
        vars.check()?;
        Ok(vars)
    }

    /// Addresses were validated upstream; a NUL would still cut an argument short in C.
    fn check(&self) -> Result<(), DeliveryError> {
        for (name, value) in self.table() {
            if value.contains('\0') {
                return Err(DeliveryError::permanent(format!(
                    "MDA: NUL character in {name}"
                )));
            }
        }
        Ok(())
    }

    fn table(&self) -> [(&'static str, &str); 6] {
        [
            ("%from%", &self.from),
            ("%from_user%", &self.from_user),
            ("%from_domain%", &self.from_domain),
            ("%to%", &self.to),
            ("%to_user%", &self.to_user),
            ("%to_domain%", &self.to_domain),
        ]
    }

    /// One left-to-right pass: replaced text is never scanned again.
    fn substitute(&self, template: &str) -> String {
        let table = self.table();
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            match table.iter().find(|(key, _)| rest.starts_with(key)) {
                Some((key, value)) => {
                    out.push_str(value);
                    rest = &rest[key.len()..];
                }
                None => {
                    out.push('%');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::command::tests::item_with;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn substitution_table() {
        let vars = Vars::new("Bob@Sender.example", &addr("alice@example.com")).unwrap();
        let null = Vars::new("", &addr("alice@example.com")).unwrap();
        let cases = [
            (&vars, "%from%", "Bob@Sender.example"),
            (&vars, "%from_user%/%from_domain%", "Bob/Sender.example"),
            (&vars, "%to%", "alice@example.com"),
            (&vars, "--user=%to_user%", "--user=alice"),
            (&vars, "%to_domain%", "example.com"),
            (&vars, "%to_user%@%to_domain%", "alice@example.com"),
            (&vars, "100% %TO% %unknown% %", "100% %TO% %unknown% %"),
            (&vars, "%%to%%", "%alice@example.com%"),
            (&vars, "plain", "plain"),
            (&null, "-f%from%", "-f"),
            (&null, "[%from_user%|%from_domain%]", "[|]"),
        ];
        for (vars, template, want) in cases {
            assert_eq!(vars.substitute(template), want, "{template}");
        }
    }

    #[test]
    fn null_sender_forms_are_empty() {
        for from in ["", "<>"] {
            let vars = Vars::new(from, &addr("a@example.com")).unwrap();
            assert_eq!(vars.from, "", "{from:?}");
        }
    }

    #[test]
    fn values_are_not_substituted_twice() {
        let vars = Vars::new("%to%@evil.example", &addr("a@example.com")).unwrap();
        assert_eq!(vars.substitute("%from%"), "%to%@evil.example");
    }

    #[test]
    fn nul_is_refused() {
        let e = Vars::new("a\0b@example.com", &addr("a@example.com")).unwrap_err();
        assert!(e.permanent && e.reason.contains("%from%"), "{e}");
    }

    fn template(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// A helper "MDA": records its arguments and environment, stores stdin, exits with $1.
    fn helper(dir: &std::path::Path) -> String {
        let script = dir.join("mda.sh");
        let body = format!(
            "#!/bin/sh\nd={d}\nprintf '%s\\n' \"$@\" > $d/args\n\
             printf '%s|%s\\n' \"$SENDER\" \"$RECIPIENT\" > $d/env\ncat > $d/msg\nexit $1\n",
            d = dir.display()
        );
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        script.to_str().unwrap().to_string()
    }

    #[test]
    fn runs_with_substituted_arguments_and_unchanged_message() {
        let data = b"Subject: hi\r\n\r\nbody\r\n";
        let (tmp, item) = item_with(data);
        let mda = helper(tmp.path());
        let argv = template(&[&mda, "0", "-f", "%from%", "-d", "%to_user%", "%to_domain%"]);
        let to = addr("alice@example.com");
        let limit = Duration::from_secs(10);
        smol::block_on(deliver(&argv, "bob@sender.example", &to, &item, limit)).unwrap();
        let args = std::fs::read_to_string(tmp.path().join("args")).unwrap();
        assert_eq!(args, "0\n-f\nbob@sender.example\n-d\nalice\nexample.com\n");
        let env = std::fs::read_to_string(tmp.path().join("env")).unwrap();
        assert_eq!(env, "bob@sender.example|alice@example.com\n");
        assert_eq!(std::fs::read(tmp.path().join("msg")).unwrap(), data);
    }

    #[test]
    fn exit_codes_map_to_temporary_and_permanent() {
        let (tmp, item) = item_with(b"x\r\n");
        let mda = helper(tmp.path());
        let to = addr("alice@example.com");
        let limit = Duration::from_secs(10);
        let cases = [("0", None), ("75", Some(false)), ("67", Some(true))];
        for (code, want) in cases {
            let argv = template(&[&mda, code, "%from%"]);
            let got = smol::block_on(deliver(&argv, "", &to, &item, limit));
            assert_eq!(got.map_err(|e| e.permanent).err(), want, "exit {code}");
        }
        let args = std::fs::read_to_string(tmp.path().join("args")).unwrap();
        assert_eq!(args, "67\n\n", "null sender passed as an empty argument");
    }
}
