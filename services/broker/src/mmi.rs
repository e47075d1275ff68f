//! The Majordomo Management Interface (RFC 8): services under `mmi.` are
//! answered by the broker itself.
//!
//! - `mmi.service` (RFC 8), body `[name]`: `200` if at least one worker is
//!   registered for `name` (for the default service, also when plain REP
//!   workers are connected to the backend), `404` otherwise;
//! - `mmi.services` (our extension): one frame of lines `<name> <workers>`,
//!   sorted by name, for every service with workers;
//! - any other `mmi.` service: `501` (RFC 8: not implemented).

use crate::router::Router;

impl Router {
    /// The reply body of an MMI request to `service` with `body`.
    pub(crate) fn mmi(&self, service: &[u8], body: &[&[u8]]) -> Vec<u8> {
        match service {
            b"mmi.service" => {
                let found = body.first().is_some_and(|name| self.worker_count(name) > 0);
                (if found { "200" } else { "404" }).into()
            }
            b"mmi.services" => self.service_list().into_bytes(),
            _ => b"501".to_vec(),
        }
    }

    /// Workers able to serve `name` (Majordomo workers, plus REP peers for
    /// the default service).
    fn worker_count(&self, name: &[u8]) -> usize {
        let mdp = self
            .services
            .find(name)
            .map_or(0, |id| self.services.get(id).workers);
        let rep = if name == self.settings.default_service.as_bytes() {
            usize::try_from(self.rep_peers()).unwrap_or(0)
        } else {
            0
        };
        mdp + rep
    }

    fn service_list(&self) -> String {
        let mut lines: Vec<(String, usize)> = self
            .services
            .ids()
            .into_iter()
            .map(|id| self.services.get(id).name.as_str().to_owned())
            .map(|name| {
                let n = self.worker_count(name.as_bytes());
                (name, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        lines.sort();
        lines
            .iter()
            .map(|(name, n)| format!("{name} {n}\n"))
            .collect()
    }
}
