"""Pure-PyTorch model family: encoder, DPT decoder, metric heads, routers, ZoeDepth."""

from .depth_anything import DepthAnythingCore
from .dpt import CoreOutput, DPTCore
from .encoder import BACKBONES, Encoder
from .heads import HEADS, register_head
from .router import ROUTERS, register_router
from .zoedepth import RelativeDepthModel, ZoeDepth, ZoeDepthOutput, build_model

__all__ = [
    "BACKBONES", "CoreOutput", "DPTCore", "DepthAnythingCore", "Encoder", "HEADS", "ROUTERS", "RelativeDepthModel", "ZoeDepth",
    "ZoeDepthOutput", "build_model", "register_head", "register_router",
]
