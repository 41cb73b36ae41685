//! Rows of a device pool's arena: one gather or scatter kernel moves the rows of a whole batch.

use candle_core::Tensor;

use crate::error::Result;

/// Writes row `i` of `src` `(n, width)` to arena row `rows[i]` (`rows` a u32 tensor of `n`).
pub(crate) fn scatter_rows(arena: &Tensor, rows: &Tensor, src: &Tensor) -> Result<()> {
    let (n, width) = src.dims2()?;
    if n == 0 {
        return Ok(());
    }
    let index = rows
        .reshape((n, 1))?
        .broadcast_as((n, width))?
        .contiguous()?;
    let src = src.to_dtype(arena.dtype())?.contiguous()?;
    arena.scatter_set(&index, &src, 0)?;
    Ok(())
}

/// Arena rows `rows` (a u32 tensor of `n`) as `(n, width)`: how tests read an arena back.
#[cfg(test)]
pub fn gather_rows(arena: &Tensor, rows: &Tensor) -> Result<Tensor> {
    Ok(arena.index_select(rows, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn scattered_rows_are_gathered_back_and_others_stay() {
        let arena = Tensor::zeros((6, 2), DType::F16, &Device::Cpu).unwrap();
        let src = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let rows = Tensor::new(&[4u32, 1], &Device::Cpu).unwrap();
        scatter_rows(&arena, &rows, &src).unwrap();
        let back = gather_rows(&arena, &Tensor::new(&[1u32, 4, 0], &Device::Cpu).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(back, vec![vec![3., 4.], vec![1., 2.], vec![0., 0.]]);
    }
}
