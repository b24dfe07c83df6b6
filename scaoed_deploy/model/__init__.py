"""The reference ScaoedNet and its checkpoint key layout."""

from .scaoednet import FM2ARB, NFAE, CIGChannelAttention, CIGSpatialAttention, ScaoedNet

__all__ = ["ScaoedNet", "NFAE", "FM2ARB", "CIGChannelAttention", "CIGSpatialAttention"]
