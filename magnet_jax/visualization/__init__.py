"""Pictures a person looks at: colour maps, overlays and heat maps (`pictures`), and the captioned figures
of prediction and evaluation with class legends and colour bars (`figures`, laid out by `figure_layout`)."""
