"""The marketers' preview page and its Liquid playground."""
