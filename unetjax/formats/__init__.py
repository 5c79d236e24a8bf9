"""Trained models as files other tools run: ONNX (built from the U-Net's
structure), StableHLO (`jax.export`) and BioImage Model Zoo packages
(`unetjax-export`), and running an export (`unetjax-predict --model`)."""
