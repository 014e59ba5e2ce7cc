"""OpenAI-compatible CLIP: model, tokenizer, pretrained registry and loader."""

from .loading import load, load_state_dict
from .model import CLIP, build_model
from .pretrained import available_models
from .tokenizer import tokenize

__all__ = ["CLIP", "available_models", "build_model", "load", "load_state_dict", "tokenize"]
