"""Teachers: training SL and NTL teachers (with a cache), their safetensors files, and conversion of trusted pickles."""
