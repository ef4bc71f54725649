//! Per-node iPXE scripts, rendered with minijinja from a template the administrator may replace.
//!
//! The default script loads the node's kernel and initramfs (over HTTP by default, TFTP when
//! configured) and, when anything fails, ends with `exit 1` so the firmware moves on to the next
//! boot device instead of looping or hanging on a dead network boot.

use minijinja::{context, Environment};
use serde::Serialize;

/// The built-in iPXE script template.
pub const DEFAULT_TEMPLATE: &str = r#"#!ipxe
# clustermaker boot script for {{ name }} ({{ mac }}), image {{ image }}
echo clustermaker: booting {{ name }} ({{ mac }}) image {{ image }} over {{ transfer }}
kernel {{ base }}/images/{{ image }}/vmlinuz initrd=initramfs.img {{ cmdline }} cm.master={{ master }} cm.node={{ name }} cm.mac={{ mac }}{% if nfs_server %} cm.root=nfs:{{ nfs_server }}:/images/{{ image }}{% endif %} || goto failed
initrd --name initramfs.img {{ base }}/images/{{ image }}/initramfs.img || goto failed
boot || goto failed
:failed
echo clustermaker: network boot of {{ name }} failed; trying the next boot device
exit 1
"#;

/// Everything a script template can use.
#[derive(Clone, Debug, Serialize)]
pub struct ScriptContext {
    /// Node name (the MAC with dashes for a node not yet added).
    pub name: String,
    /// MAC address, colon separated.
    pub mac: String,
    /// Image name: a directory under the images directory.
    pub image: String,
    /// Where kernel and initramfs come from: `http://IP:PORT` or `tftp://IP`.
    pub base: String,
    /// `http` or `tftp`, for messages.
    pub transfer: String,
    /// The master's HTTP base URL that the node reports to.
    pub master: String,
    /// Extra kernel command line.
    pub cmdline: String,
    /// True when the node is a registered member (false: discovered).
    pub member: bool,
    /// The NFS server nodes mount their image root from (`cm.root=nfs:SERVER:/images/IMAGE`
    /// for the node's initramfs); none: nodes stay in the initramfs.
    pub nfs_server: Option<String>,
}

/// A compiled script template.
pub struct ScriptTemplate {
    env: Environment<'static>,
}

/// A template that does not compile or render.
#[derive(Debug, thiserror::Error)]
#[error("iPXE script template: {0}")]
pub struct TemplateError(#[from] minijinja::Error);

impl ScriptTemplate {
    /// Compiles `source`; errors name the line.
    pub fn new(source: String) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("node.ipxe", source)?;
        let t = ScriptTemplate { env };
        // Render once with sample values so a template that uses an unknown variable is refused
        // at start, not when the first node boots.
        t.render(&ScriptContext {
            name: "node".into(),
            mac: "00:00:00:00:00:00".into(),
            image: "default".into(),
            base: "http://0.0.0.0".into(),
            transfer: "http".into(),
            master: "http://0.0.0.0".into(),
            cmdline: String::new(),
            member: true,
            nfs_server: Some("0.0.0.0".into()),
        })?;
        Ok(t)
    }

    pub fn builtin() -> Self {
        Self::new(DEFAULT_TEMPLATE.to_string()).expect("the built-in template compiles")
    }

    pub fn render(&self, ctx: &ScriptContext) -> Result<String, TemplateError> {
        let t = self.env.get_template("node.ipxe")?;
        Ok(t.render(context! { ..minijinja::Value::from_serialize(ctx) })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ScriptContext {
        ScriptContext {
            name: "n1".into(),
            mac: "52:54:00:00:00:01".into(),
            image: "default".into(),
            base: "http://10.0.0.1:8080".into(),
            transfer: "http".into(),
            master: "http://10.0.0.1:8080".into(),
            cmdline: "console=ttyS0".into(),
            member: true,
            nfs_server: None,
        }
    }

    #[test]
    fn builtin_script_loads_kernel_and_initrd_and_exits_1_on_failure() {
        let s = ScriptTemplate::builtin().render(&ctx()).unwrap();
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.0.1:8080/images/default/vmlinuz initrd=initramfs.img console=ttyS0 cm.master=http://10.0.0.1:8080 cm.node=n1"));
        assert!(s.contains(
            "initrd --name initramfs.img http://10.0.0.1:8080/images/default/initramfs.img"
        ));
        assert!(s.trim_end().ends_with("exit 1"));
        assert!(!s.contains("cm.root"));
        let nfs = ScriptContext {
            nfs_server: Some("10.0.0.100".into()),
            ..ctx()
        };
        let s = ScriptTemplate::builtin().render(&nfs).unwrap();
        assert!(
            s.contains(
                " cm.mac=52:54:00:00:00:01 cm.root=nfs:10.0.0.100:/images/default || goto failed"
            ),
            "{s}"
        );
    }

    #[test]
    fn unknown_variable_is_refused_at_compile() {
        let err = ScriptTemplate::new("#!ipxe\necho {{ nonsense }}\n".into())
            .err()
            .unwrap();
        assert!(err.to_string().contains("undefined"), "{err}");
        assert!(ScriptTemplate::new("{% if %}".into()).is_err());
    }
}
