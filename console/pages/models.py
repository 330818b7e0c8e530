"""Placeholder: filled in by its branch before merge."""

import streamlit as st

st.title("models")
