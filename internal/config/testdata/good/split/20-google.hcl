provider "workspace" {
  preset = "google"
}
