//! The `pass` protocol: factotum as a store of passwords. Client role only: after
//! `start proto=pass role=client ...`, one `read` returns the key's user and password,
//! each quoted rc-style, separated by a space (what `auth_getuserpasswd` reads).

use crate::attr::quote;
use crate::rpc::{Ctx, Proto, ProtoDesc, SecretBytes, Step, Want};

pub const DESC: ProtoDesc = ProtoDesc {
    name: "pass",
    roles: &["client"],
    keyprompt: "user? !password?",
    start: |_role| Box::new(Pass::default()),
    check: None,
    prepare: None,
};

#[derive(Default)]
struct Pass {
    /// A key was looked for and not found (plan9port is still in state `nascent`
    /// then).
    missing: bool,
    sent: bool,
}

impl Proto for Pass {
    fn state(&self) -> &'static str {
        if self.missing { "nascent" } else { "write" }
    }

    fn wants(&self) -> Want {
        Want::Read
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let tmpl = ctx.attrs.clone();
        let Some(k) = ctx.key(&tmpl) else {
            self.missing = true;
            return Step::NeedKey(tmpl);
        };
        self.missing = false;
        let user = k.find("user").unwrap_or("");
        let pw = k.find("!password").unwrap_or("");
        let mut q = quote(pw);
        let out = SecretBytes(format!("{} {}", quote(user), q).into_bytes());
        crate::attr::zero(&mut q);
        self.sent = true;
        Step::Ok(out)
    }

    fn write(&mut self, _ctx: &mut Ctx<'_>, _data: &[u8]) -> Step {
        Step::Error("pass takes no messages".into())
    }

    fn done(&self) -> bool {
        self.sent
    }
}
