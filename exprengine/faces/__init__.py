"""Faces in whole photos: detection (face_recognition's dlib models) and crops."""
