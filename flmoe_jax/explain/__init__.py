"""Expert-wise explanations: attributions, top-K% masking faithfulness, concentration and specificity."""
