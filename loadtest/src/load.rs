//! How load is applied at one sweep point: a closed loop of N clients or an open loop of
//! arrivals at a rate.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Load {
    /// `concurrency` clients, each sending its next request when the last one ends.
    Closed { concurrency: usize },
    /// Requests arrive at `rate` per second (`"inf"`: all at once) with gamma-distributed
    /// gaps of shape `burstiness`, however many are running, up to `max_concurrency`.
    Open {
        #[serde(serialize_with = "rate_out", deserialize_with = "rate_in")]
        rate: f64,
        burstiness: f64,
        max_concurrency: Option<usize>,
    },
}

impl Load {
    /// Short label for tables and charts: `c=4`, `2 req/s`, `inf req/s`.
    pub fn label(&self) -> String {
        match *self {
            Load::Closed { concurrency } => format!("c={concurrency}"),
            Load::Open { rate, .. } if rate.is_infinite() => "inf req/s".into(),
            Load::Open { rate, .. } => format!("{} req/s", trim_number(rate)),
        }
    }

    /// The swept value, for a chart axis.
    pub fn value(&self) -> f64 {
        match *self {
            Load::Closed { concurrency } => concurrency as f64,
            Load::Open { rate, .. } => rate,
        }
    }
}

/// `2` rather than `2.0`, `0.25` as is.
pub fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

// JSON has no infinity: an infinite rate is written as the string "inf".
fn rate_out<S: Serializer>(rate: &f64, s: S) -> Result<S::Ok, S::Error> {
    if rate.is_infinite() {
        s.serialize_str("inf")
    } else {
        s.serialize_f64(*rate)
    }
}

fn rate_in<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Number(f64),
        Text(String),
    }
    match Rate::deserialize(d)? {
        Rate::Number(v) => Ok(v),
        Rate::Text(t) if t == "inf" => Ok(f64::INFINITY),
        Rate::Text(t) => Err(serde::de::Error::custom(format!("bad rate {t:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_json_round_trip() {
        let open = Load::Open {
            rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: None,
        };
        assert_eq!(open.label(), "inf req/s");
        let json = serde_json::to_string(&open).unwrap();
        assert!(json.contains("\"rate\":\"inf\""), "{json}");
        assert_eq!(serde_json::from_str::<Load>(&json).unwrap(), open);
        let closed = Load::Closed { concurrency: 4 };
        assert_eq!(closed.label(), "c=4");
        let json = serde_json::to_string(&closed).unwrap();
        assert_eq!(serde_json::from_str::<Load>(&json).unwrap(), closed);
        assert_eq!(trim_number(2.0), "2");
        assert_eq!(trim_number(0.25), "0.25");
    }
}
