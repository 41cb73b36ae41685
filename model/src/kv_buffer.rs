//! Storage of K/V rows in f32 or f16. f16 halves the bytes every decode step reads from the
//! cache (llama.cpp's default); f32 keeps the forward exact against f32 references.

use half::f16;

/// Element type of cached K/V rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown K/V cache dtype {other:?} (f16 or f32)")),
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A growable or fixed buffer of K/V values.
#[derive(Debug, Clone)]
pub enum KvBuffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvBuffer {
    pub fn zeros(dtype: KvDtype, len: usize) -> Self {
        match dtype {
            KvDtype::F32 => Self::F32(vec![0.0; len]),
            KvDtype::F16 => Self::F16(vec![f16::ZERO; len]),
        }
    }

    pub fn with_capacity(dtype: KvDtype, capacity: usize) -> Self {
        match dtype {
            KvDtype::F32 => Self::F32(Vec::with_capacity(capacity)),
            KvDtype::F16 => Self::F16(Vec::with_capacity(capacity)),
        }
    }

    pub fn len(&self) -> usize {
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> KvDtype {
        match self {
            Self::F32(_) => KvDtype::F32,
            Self::F16(_) => KvDtype::F16,
        }
    }

    pub fn bytes(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// Overwrites `src.len()` values from `at`.
    pub fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Self::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Self::F16(v) => {
                for (d, &s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            }
        }
    }

    pub fn extend(&mut self, src: &[f32]) {
        match self {
            Self::F32(v) => v.extend_from_slice(src),
            Self::F16(v) => v.extend(src.iter().map(|&s| f16::from_f32(s))),
        }
    }

    pub fn reserve(&mut self, more: usize) {
        match self {
            Self::F32(v) => v.reserve(more),
            Self::F16(v) => v.reserve(more),
        }
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            Self::F32(v) => v.truncate(len),
            Self::F16(v) => v.truncate(len),
        }
    }

    pub fn view(&self) -> KvSlice<'_> {
        match self {
            Self::F32(v) => KvSlice::F32(v),
            Self::F16(v) => KvSlice::F16(v),
        }
    }
}

/// A borrowed run of K/V values.
#[derive(Debug, Clone, Copy)]
pub enum KvSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> KvSlice<'a> {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn slice(&self, range: std::ops::Range<usize>) -> KvSlice<'a> {
        match self {
            Self::F32(v) => Self::F32(&v[range]),
            Self::F16(v) => Self::F16(&v[range]),
        }
    }

    /// The values as f32 (for tests and slow paths).
    pub fn to_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.to_vec(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}
