"""Model registry: `create_model(name, **kw)` and `list_models()` cover smp and segwise's own models."""

from segwise.models import smp_bridge
from segwise.models import factseg  # noqa: F401  (registers 'factseg')
from segwise.models import trimap_vit  # noqa: F401  (registers trimap_vit)
from segwise.models import contextseg  # noqa: F401  (registers contextseg, contextseg_embed, stroke_classifier)
from segwise.models import classic  # noqa: F401  (registers the classic family)
from segwise.models.registry import create_model, input_stride, list_models, model_entry, register_model
from segwise.models.smp_bridge import list_encoders

__all__ = ["create_model", "input_stride", "list_encoders", "list_models", "model_entry", "register_model", "smp_bridge"]
