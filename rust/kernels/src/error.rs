//! The one error type of hologram-kernels. Every public entry point validates its arguments and
//! returns `Result<_, KernelError>`; kernels below that layer only `debug_assert!`.

use std::fmt;

use crate::quant::QuantType;
use crate::simd::Isa;

/// Why a kernel call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// No kernel exists for this tensor type (yet), or not in this role (e.g. Q8_1 weights).
    UnsupportedType(QuantType),
    /// The requested instruction set is not available on this CPU / build.
    UnsupportedIsa(Isa),
    /// `n` elements is not a whole number of `t`'s blocks.
    NotBlockAligned { t: QuantType, n: usize },
    /// A buffer has the wrong length.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A size computation overflowed `usize`.
    Overflow,
    /// The thread pool could not be built.
    ThreadPool(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::UnsupportedType(t) => write!(f, "no kernel for tensor type {}", t.name()),
            KernelError::UnsupportedIsa(i) => {
                write!(
                    f,
                    "instruction set {} is not available on this CPU",
                    i.name()
                )
            }
            KernelError::NotBlockAligned { t, n } => write!(
                f,
                "{n} elements is not a multiple of the {} block size {}",
                t.name(),
                t.block_size()
            ),
            KernelError::LengthMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
            KernelError::Overflow => write!(f, "size computation overflowed"),
            KernelError::ThreadPool(e) => write!(f, "thread pool: {e}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// `Err(LengthMismatch)` unless `got == expected`.
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}
