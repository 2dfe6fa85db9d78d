"""fairseq's adaptive input embeddings (Baevski & Auli), usable in half precision."""
from fairseq.modules import AdaptiveInput
from torch import Tensor


class AdaptiveInputAnyDtype(AdaptiveInput):
    """fairseq's AdaptiveInput, whose output takes the dtype of its bands' projections. fairseq's
    writes them into a tensor of its float32 marker's dtype, which fails under autocast (a bfloat16
    projection into a float32 tensor: "Index put requires the source and destination dtypes match")."""

    def forward(self, input: Tensor) -> Tensor:
        result = None
        for i, cutoff in enumerate(self.cutoff):
            low = self.cutoff[i - 1] if i else 0
            mask = (input >= low) & (input < cutoff)
            if mask.any():
                band = self.embeddings[i](input[mask] - low)
                if result is None:
                    result = band.new_empty(input.shape + (self.embedding_dim,))
                result[mask] = band
        return self._float_tensor.new_empty(input.shape + (self.embedding_dim,)) if result is None else result
